"""A restarted hospital joins a gloo run again (issue 31, item 3): each pair of parties has its own
two-rank gloo group, so the server admits the restarted one and the links to it are formed anew,
with sequence numbers from 0 and authentication codes of the new incarnation, while the other links
go on; a restarted party with another config is refused, naming the keys.

The parties are threads of one child process (gloo aborts a process on some errors); the child is
killed on failure.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, threading, time
from medsplit.transport.gloo import GlooTransport, free_port
from medsplit.transport.base import TransportError

address = f"127.0.0.1:{free_port()}"
ranks = {"server": 0, "client0": 1, "client1": 2}
secret = b"k" * 32
config = {"config_hash": "h", "config_keys": {"a": "1"}}
ends, out = {}, {}

def start(party, **kw):
    ends[party] = GlooTransport(party, ranks, address, timeout_s=20, checkin=kw.pop("checkin", config), secret=secret, **kw)

def run_all(*calls):
    threads = [threading.Thread(target=f, args=a) for f, *a in calls]
    [t.start() for t in threads]; [t.join(40) for t in threads]

def cross(sender, receiver, receiving, payload):
    # a gloo send completes once the receiver has posted its receive: send from a thread
    thread = threading.Thread(target=sender.send, args=(receiver, payload))
    thread.start()
    got = receiving.recv(sender.name, 64).decode()
    thread.join(30)
    return got

run_all((start, "server"), (start, "client0"), (start, "client1"))
server, c0, c1 = ends["server"], ends["client0"], ends["client1"]
out["before"] = [cross(a, b.name, b, b"before") for a, b in [(c0, server), (c1, server), (c0, c1), (c1, c0)]]
c1.close()  # client1's process is gone
try:
    server.recv("client1", 64)
    out["to_dead"] = "received"
except TransportError as e:
    out["to_dead"] = type(e).__name__

def restart(party, wait_s, checkin=config):
    try:
        start(party, rejoin_wait_s=wait_s, checkin=checkin)
    except TransportError as e:
        out["refused"] = str(e)

# a restart with another config is refused, naming the key
other = threading.Thread(target=restart, args=("client1", 20, {"config_hash": "x", "config_keys": {"a": "2"}}))
other.start()
while not (requests := server.rejoin_requests()):
    time.sleep(0.05)
(n, record, problems), = requests
server.refuse(n, "; ".join(problems))
other.join(30)

again = threading.Thread(target=restart, args=("client1", 20))
again.start()
while not (requests := server.rejoin_requests()):
    time.sleep(0.05)
(n, record, problems), = requests
out["problems"] = problems
def admit():
    out["incarnation"] = server.admit(n, 2, present=[0, 1])
run_all((admit,), (c0.relink, "client1", 1))
again.join(30)
c1 = ends["client1"]
out["after"] = [cross(a, b.name, b, b"after") for a, b in [(c1, server), (server, c1), (c0, c1), (c1, c0), (c0, server)]]
out["sequence"] = {"server->client1": server.links[2].sent, "client0->server": c0.links[0].sent,
                   "client1 incarnations": c1.incarnations}
for end in (server, c0, c1):
    end.close()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_restarted_hospital_rejoins_over_fresh_links_while_the_others_go_on(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, output[-3000:]
    got = json.loads(output.strip().splitlines()[-1])
    assert got["before"] == ["before"] * 4 and got["to_dead"] == "TransportError"
    assert "client1 (rank 2" in got["refused"] and "the configs differ in a" in got["refused"]
    assert got["problems"] == [] and got["incarnation"] == 1
    assert got["after"] == ["after"] * 5
    # the new link counts from 0 (one frame since), the untouched one goes on (two frames)
    assert got["sequence"] == {"server->client1": 1, "client0->server": 2,
                               "client1 incarnations": {"0": 0, "1": 0, "2": 1}}
