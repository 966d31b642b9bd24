"""Circuit-guided compression: mixed-precision quantization that keeps what circuits need.

    config = CompressConfig(bits=3.5, protect=("ioi", "induction"))
    result = compress(model, config, out="smollm2-3.5bit")   # quantizes model in place
    model2 = mechscope.load("smollm2-3.5bit")                 # reads the packed codes back

See docs/compression.md: the weight groups and the bit accounting (:mod:`.quant`), the importance
from EAP-IG node scores (:mod:`.importance`), the knapsack allocator (:mod:`.allocate`), the
methods and baselines (:mod:`.methods`), RTN and GPTQ, the export format (:mod:`.packing`).
"""

from mechscope.compress.allocate import Allocation, allocate
from mechscope.compress.api import CompressConfig, CompressResult, compress, plan
from mechscope.compress.apply import quantize_model, recount
from mechscope.compress.export import export, load_packed
from mechscope.compress.groups import Layout, linear_weights
from mechscope.compress.methods import METHODS
from mechscope.compress.quant import WIDTHS, effective_bits, rtn

__all__ = [
    "METHODS",
    "WIDTHS",
    "Allocation",
    "CompressConfig",
    "CompressResult",
    "Layout",
    "allocate",
    "compress",
    "effective_bits",
    "export",
    "linear_weights",
    "load_packed",
    "plan",
    "quantize_model",
    "recount",
    "rtn",
]
