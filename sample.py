"""
Samples from a model trained with train.py:
$ python sample.py --out_dir=out-adamw-small --start="ROMEO:" --num_samples=3 --max_new_tokens=200
Characters are decoded through the dataset's meta.pkl; without one, through GPT-2's BPE (tiktoken).
"""

import os
import pickle
from contextlib import nullcontext

import torch

from checkpoint import load_checkpoint
from model import GPT, GPTConfig

here = os.path.dirname(os.path.abspath(__file__))
# -----------------------------------------------------------------------------
out_dir = 'out'  # the training run's out_dir, holding ckpt.pt
start = "\n"  # the prompt, or "FILE:prompt.txt" to read it from a file
num_samples = 10  # number of samples to draw
max_new_tokens = 500  # number of tokens generated in each sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random
top_k = 200  # keep only the top_k most likely tokens, 0 keeps all
seed = 1337
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # or 'float16'
compile = False  # torch.compile the model
exec(open(os.path.join(here, 'configurator.py')).read())  # overrides from the command line or a config file
# -----------------------------------------------------------------------------

if num_samples < 1 or max_new_tokens < 0 or temperature <= 0 or top_k < 0:
    raise ValueError(f"need num_samples >= 1, max_new_tokens >= 0, temperature > 0, top_k >= 0; got {num_samples}, "
                     f"{max_new_tokens}, {temperature}, {top_k}")
torch.manual_seed(seed)
torch.cuda.manual_seed(seed)
device_type = 'cuda' if 'cuda' in device else 'cpu'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)

checkpoint = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), map_location=device)
model = GPT(GPTConfig(**checkpoint['model_args']))
model.load_state_dict(checkpoint['model'])
model.eval()
model.to(device)
if compile:
    model = torch.compile(model)

# the tokenizer of the dataset the model was trained on
train_config = checkpoint['config']
data_dir = train_config.get('data_dir') or os.path.join(here, 'data', train_config['dataset'])
meta_path = os.path.join(data_dir, 'meta.pkl')
if os.path.exists(meta_path):
    print(f"decoding characters with {meta_path}")
    with open(meta_path, 'rb') as f:
        meta = pickle.load(f)
    stoi, itos = meta['stoi'], meta['itos']
    unknown = sorted(set(c for c in start if c not in stoi)) if not start.startswith('FILE:') else []
    if unknown:
        raise ValueError(f"the start text has characters outside the vocabulary of {meta_path}: {unknown}")
    encode = lambda s: [stoi[c] for c in s]
    decode = lambda l: ''.join([itos[i] for i in l])
else:
    print("no meta.pkl found, assuming GPT-2 encodings")
    from data.common import gpt2_encoding
    enc = gpt2_encoding()
    encode = lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})
    decode = lambda l: enc.decode(l)

if start.startswith('FILE:'):
    with open(start[5:], 'r', encoding='utf-8') as f:
        start = f.read()
start_ids = encode(start)
if not start_ids:
    raise ValueError("the start text is empty; give at least one token, e.g. --start='\\n'")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

with torch.no_grad():
    with ctx:
        for k in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None)
            print(decode(y[0].tolist()))
            print('---------------')
