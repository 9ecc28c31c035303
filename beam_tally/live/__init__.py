"""The live producer (``produce``) and its pure reorder, merge, pace and watermark logic
(``replay``)."""
