"""``python -m medsplit flare {provision,job,simulate}``: hospital deployment on NVIDIA FLARE."""

from __future__ import annotations

from pathlib import Path


def add_flare_parser(sub) -> None:
    p = sub.add_parser("flare", help="NVIDIA FLARE deployment: provision start-up kits, write jobs, run the simulator")
    fsub = p.add_subparsers(dest="flare_command", required=True)

    q = fsub.add_parser("provision", help="write the FLARE project file and start-up kits (mutual TLS)")
    q.add_argument("--sites", required=True, help="comma-separated: server,hospital-a,hospital-b")
    q.add_argument("--out", required=True, help="folder for project.yml and the kits")
    q.add_argument("--server-host", default="localhost", help="the server's host name as hospitals reach it (default localhost)")
    q.add_argument("--port", type=int, default=8102, help="server port for sites (default 8102; admin uses port+1)")
    q.add_argument("--admin", default="admin@medsplit.local",
                   help="e-mail of the consortium's admin who submits jobs (FLARE role 'lead': submit and manage "
                        "own jobs, no bring-your-own-code)")
    q.add_argument("--project", default="medsplit", help="the consortium's FLARE project name (default medsplit)")
    q.add_argument("--org", default="consortium", help="the consortium's organisation (server and admin)")
    q.add_argument("--remove-ca-state", action="store_true",
                   help="delete FLARE's <project>/state/cert.json (the root CA's private key) once the kits are written")

    for name, helptext in (("job", "write the job folder an admin submits"),
                           ("simulate", "run a job in FLARE's simulator on this machine and write its report"),
                           ("poc", "run a job in FLARE's POC mode on this machine (processes, gRPC, mutual TLS)")):
        q = fsub.add_parser(name, help=helptext)
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


def run_flare_command(args) -> int:
    from medsplit.flare import require_nvflare

    require_nvflare()
    if args.flare_command == "provision":
        from medsplit.flare.provision import provision

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
    import yaml

    from medsplit.config import load_config

    cfg = load_config(args.config, args.overrides)
    sites = [s for s in args.sites.split(",") if s] or [f"hospital-{k + 1}" for k in range(cfg.split.clients)]
    defences = None
    if args.defences:
        path = Path(args.defences)
        if not path.exists():
            raise FileNotFoundError(f"--defences {path} does not exist")
        defences = yaml.safe_load(path.read_text()) or {}
    if args.flare_command == "job":
        from medsplit.flare.job import write_job_folder

        folder = write_job_folder(cfg, sites, args.out, defences=defences, timeout_s=args.timeout,
                                  own_data=not args.shared_data, resume=args.resume)
        print(f"job folder: {folder}  (no code: every site runs the medsplit installed there)\n"
              f"submit it from the admin kit: nvflare job submit -j {folder}  (or submit_job in the admin console)")
        return 0
    out = Path(args.out)
    if args.flare_command == "poc":
        from medsplit.flare.poc import run_poc

        result = run_poc(cfg, sites, out, defences=defences, timeout_s=args.timeout, resume=args.resume)
        print(f"POC sites connected with: {result.get('tls')}; start to stop {result['seconds']:.0f} s")
    else:
        from medsplit.flare.simulate import run_simulator

        result = run_simulator(cfg, sites, out, args.workspace or out / "flare-workspace", defences=defences,
                               timeout_s=args.timeout, resume=args.resume)
    if result["status"] != "ok":
        raise RuntimeError(f"FLARE job failed: {result.get('errors')}")
    print(f"report: {out}\nmetrics: {out / 'metrics.json'}")
    return 0
