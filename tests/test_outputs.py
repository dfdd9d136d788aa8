"""outputs: atomic files and directories with the umask's permissions, read without
changing the umask."""

import errno
import os
import stat

import pytest

from nirgan_jax.infer import outputs


@pytest.fixture
def umask_027():
  previous = os.umask(0o027)
  yield 0o027
  os.umask(previous)


def _mode(path):
  return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(umask_027, monkeypatch):
  assert outputs.current_umask() == 0o027
  assert os.umask(0o027) == 0o027  # still set

  def no_proc(*args, **kwargs):
    raise FileNotFoundError("/proc/self/status")

  monkeypatch.setattr(outputs, "open", no_proc, raising=False)  # a system without /proc
  assert outputs.current_umask() == 0o027


def test_files_and_directories_get_the_umask_permissions(tmp_path, umask_027):
  outputs.write_bytes_atomic(tmp_path / "sub" / "a.csv", b"x,y\n")
  assert (tmp_path / "sub" / "a.csv").read_bytes() == b"x,y\n"
  assert _mode(tmp_path / "sub" / "a.csv") == 0o640
  with outputs.replacing(tmp_path / "model", directory=True) as tmp:
    (tmp / "config.json").write_text("{}")
  assert _mode(tmp_path / "model") == 0o750 and (tmp_path / "model" / "config.json").is_file()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sub"]


def test_a_failed_write_leaves_the_old_output(tmp_path):
  (tmp_path / "a.csv").write_text("old")
  (tmp_path / "model").mkdir()
  (tmp_path / "model" / "keep").write_text("old")
  with pytest.raises(RuntimeError), outputs.replacing(tmp_path / "a.csv") as tmp:
    tmp.write_text("half")
    raise RuntimeError
  with pytest.raises(RuntimeError), outputs.replacing(tmp_path / "model", directory=True) as tmp:
    (tmp / "half").write_text("half")
    raise RuntimeError
  assert (tmp_path / "a.csv").read_text() == "old"
  assert [p.name for p in (tmp_path / "model").iterdir()] == ["keep"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "model"]

  outputs.write_bytes_atomic(tmp_path / "a.csv", b"new")
  with outputs.replacing(tmp_path / "model", directory=True) as tmp:
    (tmp / "new").write_text("new")
  assert (tmp_path / "a.csv").read_text() == "new"
  assert [p.name for p in (tmp_path / "model").iterdir()] == ["new"]


def test_existing_and_unwritable_outputs_are_named(tmp_path):
  (tmp_path / "a.csv").write_text("")
  with pytest.raises(outputs.OutputError, match="a.csv: output exists"):
    outputs.check_new(tmp_path / "a.csv", overwrite=False)
  outputs.check_new(tmp_path / "a.csv", overwrite=True)
  with pytest.raises(outputs.OutputError, match="b.csv: cannot write there"):
    outputs.check_writable(tmp_path / "a.csv" / "b.csv")


def test_only_an_output_of_the_same_kind_is_replaced(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "checkpoints").mkdir()
  is_model_dir = lambda path: (path / "config.json").is_file()
  with pytest.raises(outputs.OutputError, match="run: exists and is not a model directory"), \
      outputs.replacing(run, directory=True, replaceable=is_model_dir):
    pass
  with pytest.raises(outputs.OutputError, match="run: exists and is not a file"), \
      outputs.replacing(run):
    pass
  assert [p.name for p in run.iterdir()] == ["checkpoints"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left


@pytest.mark.parametrize("can_exchange", [True, False])
def test_a_directory_is_swapped_in_whole(tmp_path, monkeypatch, can_exchange):
  """The new directory replaces the old one in one rename (renameat2 RENAME_EXCHANGE) where
  the system allows, else by two renames; either way the old one is gone afterwards."""
  if not can_exchange:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
  model = tmp_path / "model"
  for content in ("first", "second"):
    with outputs.replacing(model, directory=True) as tmp:
      (tmp / "config.json").write_text(content)
    assert (model / "config.json").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_exchange_swaps_two_directories(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir()
  b.mkdir()
  (a / "from_a").touch()
  (b / "from_b").touch()
  if not outputs._exchange(a, b):
    pytest.skip("this filesystem cannot exchange paths atomically")
  assert [p.name for p in a.iterdir()] == ["from_b"]
  assert [p.name for p in b.iterdir()] == ["from_a"]


class _FullDisk(bytes):
  """Contents whose write fails as it would on a full disk (a write() names no file)."""


def test_files_written_together_appear_all_or_none(tmp_path, monkeypatch):
  kept = tmp_path / "table.csv"
  kept.write_bytes(b"old table")
  new_folder = tmp_path / "new" / "figures"
  files = {kept: b"new table", new_folder / "a.png": b"png", new_folder / "b.png": _FullDisk()}
  write_bytes = type(kept).write_bytes

  def write_or_fail(path, data):
    if isinstance(data, _FullDisk):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_bytes(path, data)

  monkeypatch.setattr(type(kept), "write_bytes", write_or_fail)
  with pytest.raises(outputs.OutputError, match=r"b\.png: cannot write it \(No space left"):
    outputs.write_files_atomic(files)
  monkeypatch.undo()
  assert kept.read_bytes() == b"old table"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no folder, no temp

  files[new_folder / "b.png"] = b"png"
  outputs.write_files_atomic(files)
  assert {p: p.read_bytes() for p in files} == files
  assert sorted(p.name for p in new_folder.iterdir()) == ["a.png", "b.png"]
