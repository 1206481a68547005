"""Speech: faster-whisper transcription and the guard against what Whisper makes up."""
