"""What an analysed epoch becomes: logged key names, result objects, sinks, and reading results back."""

from lightning_ssb.results.keys import FAMILIES, GRANULARITIES, ParsedKey, parse_key, scalar_key

__all__ = ["FAMILIES", "GRANULARITIES", "ParsedKey", "parse_key", "scalar_key"]
