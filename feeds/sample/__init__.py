"""A deterministic, realistic sample region and hazard feeds, for the demo and tests.

``build_sample_region(out_dir, seed=7, size=400)`` writes a region pack (population,
zones with vulnerable-group rates, facilities, friction, a registry, ``region.toml``) and
one hazard feed file per supported format; see :mod:`feeds.sample.region`.
"""

from feeds.sample.region import SampleHazardFile, SampleRegion, build_sample_region

__all__ = ["SampleHazardFile", "SampleRegion", "build_sample_region"]
