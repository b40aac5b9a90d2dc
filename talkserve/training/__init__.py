"""Training our own weights (no LLM or Wav2Lip weights reach us): the starter LLM, Wav2Lip from the
warp teacher or a talking video, and fitting a HiFi-GAN to the voice. Above `compress` (they reuse
its data source and losses) and `models` (what they train)."""
