"""Stream processing: the canonical event envelope, topic names, micro-batch framing and
the Faust worker that turns raw feed records into alerts."""
