"""The logging recorder: every transmission on every audio channel, recorded and indexed."""
