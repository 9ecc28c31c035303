"""Reusable PTransforms, DoFns and CombineFns, and the pure helpers they use."""
