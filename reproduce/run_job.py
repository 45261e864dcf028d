"""`python -m reproduce.run_job SPEC.json`: run one job of a plan in this process (what SLURM
jobs and the local executor's workers run: reproduce.pipeline.execution.execute). With --worker it runs
the spec files it reads from its standard input one after another, answering each with a line
(reproduce.pipeline.executors.Worker). Users do not need it: the per-dataset commands and the demo start
it with --jobs N."""
import sys

from .cli import POSITIVE, ArgumentParser, run_cli
from .errors import UserError
from .pipeline.execution import WORKER_MARK, execute, limit_threads, pin_device


def get_args_parser():
    p = ArgumentParser("python -m reproduce.run_job", description=__doc__.split("\n")[0])
    p.add_argument("spec", nargs="?", help="the job's spec file (<work>/jobs/<job>.spec.json)")
    p.add_argument("--worker", action="store_true", help="run the spec files read from standard input")
    p.add_argument("--device", default=None, help="the worker's device: cpu or cuda:N")
    p.add_argument("--threads", type=POSITIVE, default=None, help="the worker's CPU threads")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if not args.worker:
        if not args.spec:
            raise UserError("python -m reproduce.run_job: give a spec file (or --worker)")
        execute(args.spec)
        return
    if args.device:
        pin_device(args.device)            # before anything starts CUDA
    limit_threads(args.threads)
    for line in sys.stdin:
        code = 0
        try:
            execute(line.strip())
        except Exception:                   # recorded by execute in the job's status and log
            code = 1
        print(f"{WORKER_MARK} {code}", flush=True)


if __name__ == "__main__":
    run_cli(main)
