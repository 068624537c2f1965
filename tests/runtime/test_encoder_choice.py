"""Which encoder the predictor runs on which CPU (``--precision auto``)."""
import pytest

from qmedsam.precision.cpu import CpuFacts, cpu_flags
from qmedsam.precision.setting import FLOAT_ENCODER, INT8_ENCODER, OWN_ENCODER, W7_ENCODER, choose_encoder

SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}
SKYLAKE_XEON = {"avx2", "avx512f"}                 # the organisers' W-2133: AVX-512 without VNNI
ALDER_LAKE = {"avx2", "avx_vnni"}                  # a client CPU with 256-bit VNNI
ZEN3 = {"avx2", "fma", "sse4_2"}                   # AVX2 only


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, ALDER_LAKE, SKYLAKE_XEON])
def test_every_cpu_where_int8_pays_runs_the_7_bit_encoder_and_says_why(flags):
    """One int8 arithmetic on every such CPU: 7-bit weights never saturate the 16-bit sums of
    kernels without VNNI, so VNNI and AMX CPUs run the same encoder and get the same answers."""
    assert CpuFacts(flags).int8_pays
    name, why = choose_encoder("auto", CpuFacts(flags, ""))
    assert name == W7_ENCODER and "7-bit" in why and "VNNI" in why


def test_avx2_only_cpus_run_the_float_encoder_and_say_why():
    name, why = choose_encoder("auto", CpuFacts(ZEN3, ""))
    assert name == FLOAT_ENCODER and "no AVX-512, VNNI or AMX" in why


def test_an_isa_cap_below_avx512_counts_as_such_a_cpu():
    assert choose_encoder("auto", CpuFacts(SAPPHIRE_RAPIDS, "avx2"))[0] == FLOAT_ENCODER
    assert choose_encoder("auto", CpuFacts(SAPPHIRE_RAPIDS, "AVX512_CORE"))[0] == W7_ENCODER   # VNNI capped away
    assert choose_encoder("auto", CpuFacts(SAPPHIRE_RAPIDS, "AVX512_CORE_VNNI"))[0] == W7_ENCODER


def test_explicit_precisions_and_unknown_cpus_keep_the_folders_own_encoder():
    assert choose_encoder("fp32", CpuFacts(ZEN3, "AVX2"))[0] == OWN_ENCODER      # the fp32 folder's own
    for flags in (SAPPHIRE_RAPIDS, ALDER_LAKE, set()):
        assert choose_encoder("int8", CpuFacts(flags, "")) == (INT8_ENCODER, "--precision int8")
    assert choose_encoder("auto", CpuFacts(set(), ""))[0] == W7_ENCODER          # unknown flags: int8 pays


@pytest.mark.parametrize("flags,cap", [(SKYLAKE_XEON, ""), (ZEN3, ""), (SAPPHIRE_RAPIDS, "AVX512_CORE"),
                                       (SAPPHIRE_RAPIDS, "AVX2")])
def test_forced_int8_takes_the_7_bit_encoder_where_8_bit_sums_saturate(flags, cap):
    name, why = choose_encoder("int8", CpuFacts(flags, cap))
    assert name == W7_ENCODER and "saturate" in why
    with pytest.raises(ValueError):
        choose_encoder("int4")


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == set()
