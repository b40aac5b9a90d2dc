"""The voice front end and audio helpers: `asr` (Whisper with voice-activity trimming) and `audio`
(resampling and Wav2Lip's log-mel spectrogram)."""
