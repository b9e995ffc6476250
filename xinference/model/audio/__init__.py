"""Audio models: speech-to-text (faster-whisper) and text-to-speech (piper-tts)."""
