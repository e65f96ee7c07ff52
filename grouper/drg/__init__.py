"""CHS-DRG grouping (分组): published tables → compiled scheme → encoded records → numba kernel
→ explain (the algorithm in words) → conformance; scheme versions by discharge date."""
