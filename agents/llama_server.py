"""``python -m agents.llama_server ARGS``: llama-cpp-python's OpenAI-compatible server, made safe on CPUs
that advertise Intel AMX.

llama.cpp moves weights into "extra" buffers (AMX tiles, repacked layouts) when the CPU reports the
instructions. On virtual machines that report AMX but do not enable it, the first matrix product
dies with SIGILL (``tilezero``: invalid opcode) and the server vanishes mid-request. When
/proc/cpuinfo lists ``amx_tile``, this launcher turns extra buffers off (``use_extra_bufts``), which
keeps llama.cpp on its AVX2/AVX-512 kernels; set TEXTBOOK_LLAMA_EXTRA_BUFFERS=1 to keep them.
Every argument is passed to ``llama_cpp.server`` unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_reports_amx() -> bool:
    """Whether /proc/cpuinfo lists the ``amx_tile`` flag (False where it cannot be read: not Linux)."""
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def main() -> None:
    """Run ``llama_cpp.server`` with this process's arguments, extra buffers off when the CPU reports AMX."""
    import llama_cpp.llama_cpp as lib

    if cpu_reports_amx() and os.environ.get("TEXTBOOK_LLAMA_EXTRA_BUFFERS") != "1":
        default = lib.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
