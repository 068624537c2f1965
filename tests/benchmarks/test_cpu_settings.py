"""Which CPU settings the benchmarks measure."""
from benchmarks.cpu import settings, settings_note


def test_the_organiser_like_setting_is_measured_only_where_the_isa_cap_changes_something():
    sapphire = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}
    cascade = {"avx2", "avx512f", "avx512_vnni"}
    skylake = {"avx2", "avx512f"}
    epyc_avx2 = {"avx2", "fma"}
    assert list(settings(sapphire)) == ["default", "organiser-like"]
    assert list(settings(cascade)) == ["default", "organiser-like"]
    assert settings_note(settings(cascade)) is None
    for flags in (skylake, epyc_avx2):
        chosen = settings(flags)
        assert list(chosen) == ["default"]
        assert "changes nothing" in settings_note(chosen)


def test_a_setting_runs_in_a_fresh_process_with_its_environment(tmp_path, monkeypatch, capfd):
    import os

    import pytest

    from benchmarks.cpu import run_setting

    (tmp_path / "fake_measure.py").write_text(
        "import json, os, sys\n"
        "print('case 1 done', file=sys.stderr)\n"
        "if sys.argv[-1] == 'fail':\n    sys.exit(3)\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cap': os.environ.get('ONEDNN_MAX_CPU_ISA')}))\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    got = run_setting("fake_measure", "organiser-like", ["--x", "1"])
    assert got == {"argv": ["--measure", "organiser-like", "--x", "1"], "cap": "AVX512_CORE"}
    assert run_setting("fake_measure", "default", [])["cap"] is None
    assert "case 1 done" not in capfd.readouterr().err           # captured unless asked for
    run_setting("fake_measure", "default", [], progress=True)
    assert "case 1 done" in capfd.readouterr().err                # passed straight through
    with pytest.raises(RuntimeError, match="case 1 done"):
        run_setting("fake_measure", "default", ["fail"])
    with pytest.raises(RuntimeError, match="exit status 3"):
        run_setting("fake_measure", "default", ["fail"], progress=True)
