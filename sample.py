"""
Samples from a model trained with train.py:
$ python sample.py --out_dir=out-adamw-small --start="ROMEO:" --num_samples=3 --max_new_tokens=200
A character-level model's text is decoded through its dataset's meta.json (data/common.py's load_meta); a model with
GPT-2's vocabulary (50257, or 50304 padded) and no meta.json, through GPT-2's BPE (tiktoken).
"""

import os
from contextlib import nullcontext

import torch

from checkpoint import load_checkpoint
from data.common import gpt2_encoding, load_meta
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
allow_pickle_meta = False  # read an old meta.pkl (unpickling runs any code it holds) and convert it to meta.json
config_keys = [k for k, v in globals().items() if not k.startswith('_') and (v is None or type(v) in (int, float, bool, str))]
config_keys.remove('here')
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

# the tokenizer of the dataset the model was trained on: its characters, or GPT-2's BPE
train_config = checkpoint['config']
data_dir = train_config.get('data_dir') or os.path.join(here, 'data', train_config['dataset'])
vocab_size = checkpoint['model_args']['vocab_size']
meta = load_meta(data_dir, allow_pickle_meta)
if start.startswith('FILE:'):
    with open(start[5:], 'r', encoding='utf-8') as f:
        start = f.read()
if meta is not None:
    if meta['vocab_size'] != vocab_size:
        raise ValueError(f"the model has vocab_size {vocab_size} but {data_dir}/meta.json has {meta['vocab_size']} "
                         f"characters: the data folder was prepared again differently, or is another dataset's")
    print(f"decoding characters with {os.path.join(data_dir, 'meta.json')}")
    stoi, itos = meta['stoi'], meta['itos']
    unknown = sorted(set(c for c in start if c not in stoi))
    if unknown:
        raise ValueError(f"the start text has characters outside the vocabulary of {data_dir}/meta.json: {unknown}")
    encode = lambda s: [stoi[c] for c in s]
    decode = lambda l: ''.join([itos[i] for i in l])
elif vocab_size in (50257, 50304):  # GPT-2's BPE, as is or padded up to a multiple of 64
    print("no meta.json and a GPT-2 vocabulary: decoding with GPT-2's BPE")
    enc = gpt2_encoding()
    encode = lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})
    decode = lambda l: enc.decode(l)
else:
    prepare = os.path.join(here, 'data', train_config['dataset'], 'prepare.py')
    raise FileNotFoundError(f"the model has a vocabulary of {vocab_size} tokens, not GPT-2's, but its data folder "
                            f"{data_dir} has no meta.json to decode them with; prepare the dataset: "
                            f"python {prepare} --out_dir={data_dir}")

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
