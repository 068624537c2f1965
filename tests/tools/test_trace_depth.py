"""make trace-depth: the runtime's own stack at every OpenVINO inference call of a short 3D case
stays within 9 frames, and the count is of the runtime's frames only."""
import sys

from tools.trace_depth import main, runtime_stack


def test_runtime_stack_counts_only_the_runtimes_frames():
    def inner():
        return runtime_stack(sys._getframe(), __file__.rsplit("/", 1)[0] + "/")

    stack = inner()
    assert stack[0].endswith(".inner") and stack[1].endswith(".test_runtime_stack_counts_only_the_runtimes_frames")
    assert len(stack) == 2                       # pytest's own frames are outside the folder


def test_a_short_3d_case_stays_within_nine_frames(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "deepest" in out and "predict.main ->" in out
