"""The package a command imports is this one, whatever the working directory holds.

The commands themselves are run from a directory holding a `miajax/` folder by
test_inspect_report's run; here, the start-up check that refuses a shadowed package.
"""

import subprocess
import sys
import types

import pytest

import miajax
from conftest import cpu_env
from miajax import errors


def test_import_from_a_directory_holding_a_miajax_folder_finds_the_package(tmp_path):
  (tmp_path / "miajax" / "report").mkdir(parents=True)
  proc = subprocess.run([sys.executable, "-c", "import miajax; print(miajax.__file__)"],
                        cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == miajax.__file__


def test_a_shadowed_package_is_refused_in_one_line(tmp_path, monkeypatch):
  folder = types.ModuleType("miajax")
  folder.__path__ = [str(tmp_path / "miajax")]     # what a namespace package looks like
  monkeypatch.setitem(sys.modules, "miajax", folder)
  with pytest.raises(errors.UserError, match=r"found .*/miajax, not the installed package"):
    errors.check_package()


def test_the_real_package_passes_the_check():
  errors.check_package()
