# Writes a synthetic Qwen3-8B (random weights, bf16, safetensors) with transformers.
import sys, time, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
out = sys.argv[1]
cfg = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
t = time.time()
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = Qwen3ForCausalLM(cfg)
model.config.torch_dtype = torch.bfloat16
model.save_pretrained(out, safe_serialization=True, max_shard_size="4GB")
print(f"wrote {out}: {sum(p.numel() for p in model.parameters())/1e9:.2f}B params in {time.time()-t:.0f}s")
