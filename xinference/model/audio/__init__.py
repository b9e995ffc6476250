"""Audio models (speech-to-text, text-to-speech): registration only for now."""
