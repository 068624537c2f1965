"""The package as a user installs it (tools/wheel_check.py): a wheel in a fresh venv with the
runtime's dependencies only segments the samples as the checkout does (minutes: slow-marked)."""
import pytest

from tools.wheel_check import check

pytestmark = pytest.mark.slow


def test_the_installed_wheel_segments_the_samples_as_the_checkout(tmp_path):
    done = check(tmp_path / "wheel")
    assert any("identical" in line for line in done) and any("sha256" in line for line in done)
