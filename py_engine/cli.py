"""The `py-engine` command (host side).

    py-engine info                 the native GPU adapter and its limits
    py-engine selfcheck            run the kernel checks on the native backend
    py-engine serve DIR            serve a built web/dist on 127.0.0.1
"""

import argparse
import json
import sys
import warnings


def _open(power_preference):
    from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoftwareAdapterWarning)
        device = run_sync(open_device("native", power_preference))
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    return device


def cmd_info(args):
    device = _open(args.power)
    print(json.dumps({"adapter": device.info.as_dict(), "limits": device.limits,
                      "features": sorted(device.features)}, indent=2))
    return 0


def cmd_selfcheck(args):
    from py_engine.gpu import run_sync
    from py_engine.gpu.selfcheck import run_selfcheck

    device = _open(args.power)
    report = run_sync(run_selfcheck(device, seed=args.seed))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for c in report["checks"]:
            err = c["rel_error"]
            err = f"{err:.2e}" if isinstance(err, float) else err
            print(f"{c['kernel']:<11} {c['shape']:<16} rel error {err:>10}  bound {c['bound']:.0e}  "
                  f"{'ok' if c['ok'] else 'FAIL'}")
    return 0 if report["ok"] else 1


def cmd_serve(args):
    from py_engine.server import serve

    serve(args.directory, host=args.host, port=args.port)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="py-engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("info", cmd_info), ("selfcheck", cmd_selfcheck)):
        p = sub.add_parser(name)
        p.add_argument("--power", choices=["high-performance", "low-power"], default="high-performance")
        p.set_defaults(fn=fn)
    sub.choices["selfcheck"].add_argument("--json", action="store_true")
    sub.choices["selfcheck"].add_argument("--seed", type=int)
    p = sub.add_parser("serve")
    p.add_argument("directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(fn=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as e:  # a clear one-line error for users; tracebacks are for bugs
        from py_engine.gpu import GPUError

        if isinstance(e, (GPUError, FileNotFoundError, ValueError)):
            print(f"py-engine: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
