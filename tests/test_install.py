"""scripts/install.sh refuses, before any work, a disk without room for the venv."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _copy(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    return tmp_path / "scripts" / "install.sh"


def test_install_refuses_a_disk_without_room_and_creates_nothing(tmp_path):
    script = _copy(tmp_path)
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "GENBENCH_INSTALL_NEED_MB": str(10**12)})
    assert r.returncode == 1, r.stderr
    assert "MB free on the file system of" in r.stderr and "needs about 1000000000000 MB" in r.stderr
    assert not (tmp_path / ".venv").exists()


def test_install_space_check_passes_when_there_is_room(tmp_path):
    """With a need of 1 MB the check lets the install go on: to the venv step, which fails at once here
    because PATH holds only the tools the check uses (no python)."""
    script = _copy(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "df", "awk"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    r = subprocess.run([shutil.which("bash"), str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": str(bin_dir), "GENBENCH_INSTALL_NEED_MB": "1", "PYTHON": "nopython"})
    assert r.returncode != 0 and "MB free" not in r.stderr
    assert "python3" in r.stderr and not (tmp_path / ".venv").exists(), r.stderr
