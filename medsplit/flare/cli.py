"""``python -m medsplit flare {provision,job,simulate,poc}``: hospital deployment on NVIDIA FLARE."""

from __future__ import annotations

from pathlib import Path

from medsplit.config import load_config
from medsplit.flare import require_nvflare
from medsplit.yaml_file import load_yaml


def add_flare_parser(sub) -> None:
    p = sub.add_parser("flare", help="NVIDIA FLARE deployment: provision start-up kits, write jobs, run the simulator")
    fsub = p.add_subparsers(dest="flare_command", required=True)

    q = fsub.add_parser("provision", help="write the FLARE project file and start-up kits (mutual TLS)")
    q.add_argument("--sites", required=True, help="comma-separated: server,hospital-a,hospital-b")
    q.add_argument("--out", required=True, help="folder for project.yml and the kits")
    q.add_argument("--server-host", default="localhost", help="the server's host name as hospitals reach it (default localhost)")
    q.add_argument("--port", type=int, default=8102, help="server port for sites (default 8102; admin uses port+1)")
    _add_identity_arguments(q)
    q.add_argument("--remove-ca-state", action="store_true",
                   help="delete FLARE's <project>/state/cert.json (the root CA's private key) once the kits are written")

    for name, helptext in (("job", "write the job folder an admin submits"),
                           ("simulate", "run a job in FLARE's simulator on this machine and write its report"),
                           ("poc", "single-machine demo of a deployment, not a deployment: every site, its keys and "
                                   "the admin on this machine (FLARE's POC mode: processes, gRPC, mutual TLS)")):
        q = fsub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("config", help="YAML config file (configs/...)")
        q.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. split.clients=3")
        q.add_argument("--sites", default="", help="hospital sites in client order (default hospital-1..K)")
        q.add_argument("--out", required=True, help="job folder (job) or report folder (simulate)")
        q.add_argument("--defences", default="", help="YAML file with the job's defences (JobDefences fields)")
        q.add_argument("--timeout", type=float, default=120.0, help="seconds a site waits for a message (default 120)")
        q.add_argument("--resume", action="store_true",
                       help="every site continues from its own last checkpoint (after a site died)")
        if name == "job":
            q.add_argument("--shared-data", action="store_true",
                           help="every hospital loads the same dataset and keeps its partition (POC); default: "
                                "each hospital's MEDSPLIT_DATA holds only its own images")
        elif name == "simulate":
            q.add_argument("--workspace", default="", help="simulator workspace (default OUT/flare-workspace)")
        else:
            _add_identity_arguments(q)
            q.add_argument("--port", type=int, default=8102,
                           help="the POC server's port on loopback (default 8102; admin uses port+1)")
            q.add_argument("--policy", action="append", default=[], metavar="SITE=FILE",
                           help="a hospital's site policy file, installed in its POC kit (repeatable)")


def _add_identity_arguments(q) -> None:
    """The consortium's identity, the same for ``provision`` and ``poc``."""
    q.add_argument("--admin", default="admin@medsplit.local",
                   help="e-mail of the consortium's admin who submits jobs (FLARE role 'lead': submit and manage "
                        "own jobs, no bring-your-own-code)")
    q.add_argument("--project", default="medsplit", help="the consortium's FLARE project name (default medsplit)")
    q.add_argument("--org", default="consortium", help="the consortium's organisation (server and admin)")


def _site_policies(pairs: list[str]) -> dict[str, Path]:
    """``--policy SITE=FILE`` arguments as site -> file; a malformed pair or a missing file is named."""
    out = {}
    for pair in pairs:
        site, sep, file = pair.partition("=")
        if not sep or not site or not file:
            raise ValueError(f"--policy {pair!r}: write SITE=FILE, e.g. --policy hospital-a=policy-a.yaml")
        if not Path(file).is_file():
            raise FileNotFoundError(f"--policy {pair!r}: {file} does not exist")
        out[site] = Path(file)
    return out


def run_flare_command(args) -> int:
    require_nvflare()
    if args.flare_command == "provision":
        from medsplit.flare.provision import provision  # optional extra nvflare: `flare --help` answers without it

        # optional extra nvflare: `flare --help` answers without it
        from medsplit.flare.provision import private_key_files

        kits = provision(args.sites.split(","), args.out, server_host=args.server_host, fed_port=args.port,
                         admin_port=args.port + 1, admin=args.admin, project=args.project, org=args.org,
                         remove_ca_state=args.remove_ca_state)
        print(f"start-up kits: {kits}")
        for kit in sorted(p for p in kits.iterdir() if p.is_dir()):
            print(f"  {kit.name}: {kit}")
        print("files holding private keys (mode 0600; give each kit only to its participant):")
        for path, holder in private_key_files(Path(args.out).resolve(), kits, args.project):
            print(f"  {path}: {holder}")
        if args.remove_ca_state:
            print(f"removed {Path(args.out).resolve() / args.project / 'state' / 'cert.json'} (the root CA's key): "
                  "adding a site later needs a new provisioning")
        return 0

    cfg = load_config(args.config, args.overrides)
    sites = [s for s in args.sites.split(",") if s] or [f"hospital-{k + 1}" for k in range(cfg.split.clients)]
    defences = None
    if args.defences:
        path = Path(args.defences)
        if not path.exists():
            raise FileNotFoundError(f"--defences {path} does not exist")
        defences = load_yaml(path.read_text()) or {}
    if args.flare_command == "job":
        from medsplit.flare.job import write_job_folder  # imports torch: `flare --help` answers without it

        folder = write_job_folder(cfg, sites, args.out, defences=defences, timeout_s=args.timeout,
                                  own_data=not args.shared_data, resume=args.resume)
        print(f"job folder: {folder}  (no code: every site runs the medsplit installed there)\n"
              f"submit it from the admin kit: nvflare job submit -j {folder}  (or submit_job in the admin console)")
        return 0
    out = Path(args.out)
    if args.flare_command == "poc":
        from medsplit.flare.poc import run_poc  # optional extra nvflare: `flare --help` answers without it

        result = run_poc(cfg, sites, out, defences=defences, policies=_site_policies(args.policy),
                         timeout_s=args.timeout, resume=args.resume, admin=args.admin, project=args.project,
                         org=args.org, port=args.port)
        print(f"POC (a single-machine demo: every kit and private key was on this machine, now removed)\n"
              f"  sites connected with: {result.get('tls')}; job submitted by: {result.get('submitter')}; "
              f"start to stop {result['seconds']:.0f} s")
    else:
        from medsplit.flare.simulate import run_simulator  # optional extra nvflare: `flare --help` answers without it

        result = run_simulator(cfg, sites, out, args.workspace or out / "flare-workspace", defences=defences,
                               timeout_s=args.timeout, resume=args.resume)
    if result["status"] != "ok":
        raise RuntimeError(f"FLARE job failed: {result.get('errors')}")
    print(f"report: {out}\nmetrics: {out / 'metrics.json'}")
    return 0
