"""Where data enters and leaves: input files (``sources``, ``files``), the live stream and its
rolling sink (``stream``), path rules (``paths``)."""
