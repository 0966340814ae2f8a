"""Device choice and the CPU allocator setting training applies."""

from __future__ import annotations

import platform

import pytest
import torch

from fedvault.common.device import pick_device, tune_cpu_allocator


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("preference", ["tpu", "gpu", ""])
def test_an_unknown_device_is_named(preference: str) -> None:
    with pytest.raises(ValueError, match="Unknown device"):
        pick_device(preference)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_it_says_so() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_the_allocator_is_tuned_on_glibc_once_per_process() -> None:
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True  # idempotent
    x = torch.ones(1024, 1024)  # a block past glibc's default mmap threshold still works
    assert float(x.sum()) == 1024 * 1024
