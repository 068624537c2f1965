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
