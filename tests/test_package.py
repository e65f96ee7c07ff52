"""One importable package: `import drgdip` gives the library API, `python -m drgdip` the CLI,
and the install puts no generic top-level names (grouper, weights, cli, ...) on the path."""
import subprocess
import sys

import drgdip


def test_every_public_name_resolves_and_is_documented():
    for name in drgdip.__all__:
        assert callable(getattr(drgdip, name)), name
        assert name in drgdip.__doc__, f"{name} is not listed in help(drgdip)"
    assert set(drgdip.__all__) <= set(dir(drgdip))


def test_python_m_drgdip_runs_the_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "drgdip", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "Usage: drgdip" in r.stdout, r.stderr


def test_no_generic_top_level_names_are_installed(tmp_path):
    code = ("import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None for n in "
            "['grouper', 'weights', 'codesets', 'synth', 'bench', 'cli', 'arrowio', 'drgdip']}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    import json
    found = json.loads(r.stdout)
    assert found.pop("drgdip") is True
    assert not any(found.values()), found
