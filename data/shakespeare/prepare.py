"""
Prepare the tiny Shakespeare dataset with GPT-2's BPE tokenizer (tiktoken): splits the text 90/10 by characters
and writes train.bin and val.bin (np.uint16 ids) to out_dir. Expected: 301,966 train and 36,059 val tokens.
No meta.json: train.py and sample.py then assume GPT-2 BPE (vocab 50257, padded to 50304 in the model).
Set NANOFISHER_DATA_MIRROR to read the text and the BPE files from a local mirror instead of downloading them.
"""
import os
import sys
import argparse
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # data/, for common.py
from common import get_shakespeare, gpt2_encoding, write_atomic

def prepare(out_dir=os.path.dirname(os.path.abspath(__file__))):
    data = get_shakespeare(out_dir)
    n = len(data)
    train_data = data[:int(n*0.9)]
    val_data = data[int(n*0.9):]

    # encode with tiktoken gpt2 bpe
    enc = gpt2_encoding()
    train_ids = np.array(enc.encode_ordinary(train_data), dtype=np.uint16)
    val_ids = np.array(enc.encode_ordinary(val_data), dtype=np.uint16)
    print(f"train has {len(train_ids):,} tokens")
    print(f"val has {len(val_ids):,} tokens")

    # train.bin is written last: if it exists, the dataset is complete
    write_atomic(os.path.join(out_dir, 'val.bin'), val_ids.tofile)
    write_atomic(os.path.join(out_dir, 'train.bin'), train_ids.tofile)
    print(f"wrote val.bin, train.bin to {out_dir}")

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
    prepare(**vars(parser.parse_args()))
