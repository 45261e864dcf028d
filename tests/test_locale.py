"""Text files are UTF-8 whatever the locale: under LC_ALL=C with Python's UTF-8 mode off (open()'s
default encoding is then ASCII) every text file the package reads or writes still reads and
writes as UTF-8."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import locale, sys
from reproduce.utils.fileio import read_json, write_text_atomic
from reproduce.data.lists import read_list, write_list
from reproduce.reporting.paper import load_paper_tables
from reproduce.caffe.solver_prototxt import read_solver_prototxt
assert locale.getpreferredencoding(False) == "ANSI_X3.4-1968", locale.getpreferredencoding(False)
folder = sys.argv[1]
with open(f"{folder}/list.txt", "wb") as f:
    f.write("bild_\u00fc.png 1 0\nzw\u00f6lf.png 0 1\n".encode("utf-8"))
assert read_list(f"{folder}/list.txt").paths == ["bild_\u00fc.png", "zw\u00f6lf.png"]
write_list(f"{folder}/copy.txt", ["bild_\u00fc.png"], [[1, 0]])
assert open(f"{folder}/copy.txt", "rb").read() == "bild_\u00fc.png 1 0\n".encode("utf-8")
with open(f"{folder}/doc.json", "wb") as f:
    f.write('{"method": "DPSH-\u00fc"}'.encode("utf-8"))
assert read_json(f"{folder}/doc.json", "JSON") == {"method": "DPSH-\u00fc"}
write_text_atomic(f"{folder}/table.md", "| DPSH-\u00fc |\n")
assert open(f"{folder}/table.md", "rb").read() == "| DPSH-\u00fc |\n".encode("utf-8")
with open(f"{folder}/solver.prototxt", "wb") as f:
    f.write('# Lernrate f\u00fcr NUS-WIDE\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 3\n'.encode("utf-8"))
assert read_solver_prototxt(f"{folder}/solver.prototxt").max_iter == 3
assert load_paper_tables()
print("ok")
'''


def test_text_files_are_utf8_under_an_ascii_locale(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONIOENCODING="utf-8", PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                       env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr.decode("utf-8", "replace")[-2000:]
