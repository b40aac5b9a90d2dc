"""Running and probing a Triton server over a built model repository: `serve` (the embedded or
external tritonserver, its flags and drain), `health` (readiness as the kubelet asks), `repository`
(the repository's layout and configs, written from `talkserve.spec`), `gpus` (whether plans fit)."""
