"""The test suite finds its real data outside this machine's layout too (see conftest.find_adrenal)."""

from __future__ import annotations

from pathlib import Path

from conftest import ADRENAL_FILES, find_adrenal


def _folder(path: Path) -> Path:
    path.mkdir()
    for name in ADRENAL_FILES:
        (path / name).write_bytes(b"")
    return path


def test_environment_first_then_shared_then_download(tmp_path):
    env, shared, fetched = _folder(tmp_path / "env"), _folder(tmp_path / "shared"), tmp_path / "fetched"
    never = lambda: (_ for _ in ()).throw(AssertionError("no download while a local copy exists"))  # noqa: E731
    assert find_adrenal(str(env), shared, never) == env
    assert find_adrenal(None, shared, never) == shared
    assert find_adrenal(str(tmp_path / "empty"), shared, never) == shared
    assert find_adrenal(None, tmp_path / "nothing", lambda: fetched) == fetched


def test_nowhere_is_one_message_naming_all_three_places(tmp_path):
    message = find_adrenal(str(tmp_path / "env"), tmp_path / "shared", lambda: None)
    assert isinstance(message, str)
    for part in ("LIB25D_DATA_ROOT", str(tmp_path / "env"), str(tmp_path / "shared"), "download", *ADRENAL_FILES):
        assert part in message
