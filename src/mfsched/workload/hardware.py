"""GPU, NIC and intra-server interconnect specs (public datasheet numbers).

Callers: :mod:`mfsched.workload.compute` (roofline per layer) and the topologies in
:mod:`mfsched.sim.topology` (link capacities). Figures are peak dense numbers from the vendors'
datasheets; the efficiency factors that turn them into achieved rates live in
:class:`mfsched.workload.compute.ComputeModel` and the topology configs, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from ..units import gb_per_s, gbps, gib, tflops

__all__ = ["GPUS", "INTERCONNECTS", "NICS", "GpuSpec", "LinkSpec"]


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Peak dense fp16/bf16 tensor throughput, memory bandwidth and capacity of one GPU.

    ``gpudirect_rdma``: whether NICs can read and write the GPU's memory directly (GPUDirect
    RDMA: data-center and professional GPUs; GeForce cards lack it, so their network traffic
    is staged through host memory and GPU-initiated RDMA kernels such as DeepEP's cannot run).
    """

    name: str
    peak_flops: float  # FLOP/s, dense fp16/bf16 tensor core with fp32 accumulation
    mem_bandwidth_bps: float  # bits/s of HBM/GDDR bandwidth
    mem_bytes: float
    source: str = ""
    gpudirect_rdma: bool = True

    @property
    def mem_bandwidth_bytes_per_s(self) -> float:
        return self.mem_bandwidth_bps / 8


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction of a NIC port or a GPU's interconnect attachment."""

    name: str
    capacity_bps: float
    source: str = ""


GPUS: Registry[GpuSpec] = Registry("GPU")
NICS: Registry[LinkSpec] = Registry("NIC")
INTERCONNECTS: Registry[LinkSpec] = Registry("interconnect")

for _gpu, _help in [
    # GeForce Ampere: 71 TFLOP/s dense fp16 tensor math with fp32 accumulation, which is
    # what cuBLAS (PyTorch) and vLLM's Triton MoE kernels use; 142 with fp16 accumulation.
    (GpuSpec("rtx3090", tflops(71.0), gb_per_s(936.0), gib(24),
             "NVIDIA GA102 whitepaper, appendix A: 71 TFLOP/s fp16 tensor with fp32 accumulate "
             "(dense), 936 GB/s GDDR6X; GPUDirect RDMA is not supported on GeForce",
             gpudirect_rdma=False),
     "GeForce RTX 3090 24 GB (the paper's testbed)"),
    (GpuSpec("a100", tflops(312.0), gb_per_s(2039.0), gib(80),
             "NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOP/s bf16 dense, 2039 GB/s"),
     "A100 SXM 80 GB (the paper's simulation profile)"),
    (GpuSpec("h100", tflops(989.0), gb_per_s(3350.0), gib(80),
             "NVIDIA H100 datasheet (SXM5): 989 TFLOP/s bf16 dense, 3.35 TB/s"),
     "H100 SXM 80 GB"),
    (GpuSpec("h200", tflops(989.0), gb_per_s(4800.0), gib(141),
             "NVIDIA H200 datasheet (SXM): 989 TFLOP/s bf16 dense, 4.8 TB/s"),
     "H200 SXM 141 GB"),
]:
    GPUS.add(_gpu.name, _gpu, _help)

for _nic, _help in [
    (LinkSpec("cx5-100g", gbps(100), "ConnectX-5 100GbE"), "100 Gb/s (the paper's testbed)"),
    (LinkSpec("cx6-200g", gbps(200), "ConnectX-6 200GbE/HDR"), "200 Gb/s (paper simulation)"),
    (LinkSpec("cx7-400g", gbps(400), "ConnectX-7 400GbE/NDR"), "400 Gb/s"),
]:
    NICS.add(_nic.name, _nic, _help)

for _link, _help in [
    # Per direction. PCIe x16 after 128b/130b encoding; achieved GPU-GPU copies are lower
    # (the topology applies an efficiency factor).
    (LinkSpec("pcie3-x16", gb_per_s(15.75), "PCIe 3.0 x16: 8 GT/s x 16 lanes x 128/130"),
     "PCIe Gen3 x16 (RTX 3090 servers)"),
    (LinkSpec("pcie4-x16", gb_per_s(31.5), "PCIe 4.0 x16"), "PCIe Gen4 x16"),
    (LinkSpec("pcie5-x16", gb_per_s(63.0), "PCIe 5.0 x16"), "PCIe Gen5 x16"),
    (LinkSpec("nvlink3", gb_per_s(300.0), "A100 NVLink3: 600 GB/s total, 300 GB/s each way"),
     "A100 NVLink/NVSwitch"),
    (LinkSpec("nvswitch-900", gb_per_s(900.0), "the paper's '8 GPUs on NVSwitch (900 GB/s)'"),
     "NVSwitch at the paper's 900 GB/s"),
]:
    INTERCONNECTS.add(_link.name, _link, _help)
