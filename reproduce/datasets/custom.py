"""Any dataset in list form: DHN on your own train / query / database split, as a baseline row
for your method, with every table, figure and check the paper's datasets get.

    python -m reproduce.custom --name NAME --root DIR --train-list T --query-list Q \\
        --database-list D --topk R|all [--bits K ...] [--paper-numbers CSV] [--title TEXT]

The lists are in the field's format (`relative/path l1 ... lC`, 0/1 labels, or `path class`),
paths relative to --root, the same label count in all three. --topk is the MAP cut-off of your
protocol (`all`: the whole database). The name is used in every title, file and folder
(results/NAME, runs/NAME); the tables show no published numbers unless --paper-numbers gives
yours, in the layout of reproduce/reporting/paper_tables.csv (rows whose dataset column is NAME).
Everything else (--smoke, --sweep, --seeds, the plan: --plan, re-runs, --rerun-stale, the
executors) is reproduce.pipeline.reproduction's, as for the paper's datasets.
"""
import dataclasses

from ..cli import topk_option
from ..data.lists import read_list
from ..evaluation.protocols import check_dataset_name, dataset_protocol
from ..pipeline.reproduction import Preset, Reproduction, config_from_args, get_args_parser
from ..reporting.paper import read_paper_numbers
from .common import write_split


def add_arguments(p):
    g = p.add_argument_group("your dataset")
    g.add_argument("--name", required=True, help="the dataset's name: titles, file and folder names")
    g.add_argument("--title", default=None, help="title in tables and figures (default: the name)")
    g.add_argument("--train-list", required=True, help="training list, paths relative to --root")
    g.add_argument("--query-list", required=True, help="query list")
    g.add_argument("--database-list", required=True, help="database list")
    g.add_argument("--topk", required=True, type=topk_option, metavar="R|all",
                   help="MAP over the top R of the ranking, or over the whole database")
    g.add_argument("--paper-numbers", default=None, metavar="CSV",
                   help="published numbers to show beside ours (table,method,dataset,bits,map)")


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of add_arguments."""
    name: str
    train_list: str
    query_list: str
    database_list: str
    topk: int | None
    title: str | None = None
    paper_numbers: str | None = None


def make_lists(config, lists_dir):
    o = config.options
    train = read_list(o.train_list)
    width = train.labels.shape[1]
    lists = {"train": train, "query": read_list(o.query_list, num_labels=width),
             "database": read_list(o.database_list, num_labels=width)}
    write_split(lists, lists_dir, overwrite=True)
    return lists


TEMPLATE = Preset("custom", "your dataset", None, make_lists, add_arguments, options=Options)


def main(argv=None):
    """`python -m reproduce.custom`: the whole reproduction on a dataset given as three lists."""
    config = config_from_args(TEMPLATE, get_args_parser(TEMPLATE).parse_args(argv))
    o = config.options
    check_dataset_name(o.name, "--name")
    paper = read_paper_numbers(o.paper_numbers, o.name) if o.paper_numbers else {}
    preset = dataclasses.replace(TEMPLATE, name=o.name, title=o.title or o.name,
                                 protocol=dataset_protocol(o.name, o.topk), paper=paper, paper_csv=o.paper_numbers)
    Reproduction(preset, config).run()
