"""
Prepare the tiny Shakespeare dataset for character-level language modeling.
Characters are mapped to ints 0..64; writes train.bin and val.bin (np.uint16 ids) and meta.json
(vocab_size, itos: the character of each id) to out_dir. Expected: 65 symbols, 1,003,854 train and 111,540 val tokens.
Set NANOFISHER_DATA_MIRROR to read the text from a local mirror instead of downloading it.
"""
import os
import sys
import argparse
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # data/, for common.py
from common import get_shakespeare, write_atomic, write_meta

def prepare(out_dir=os.path.dirname(os.path.abspath(__file__))):
    data = get_shakespeare(out_dir)
    print(f"length of dataset in characters: {len(data):,}")

    # all the unique characters that occur in this text
    chars = sorted(set(data))
    vocab_size = len(chars)
    print(f"vocab size: {vocab_size:,}")
    stoi = {ch: i for i, ch in enumerate(chars)}

    # 90/10 train/val split by characters
    n = len(data)
    train_ids = np.array([stoi[c] for c in data[:int(n*0.9)]], dtype=np.uint16)
    val_ids = np.array([stoi[c] for c in data[int(n*0.9):]], dtype=np.uint16)
    print(f"train has {len(train_ids):,} tokens")
    print(f"val has {len(val_ids):,} tokens")

    # train.bin is written last: if it exists, the dataset is complete
    write_meta(out_dir, chars)
    write_atomic(os.path.join(out_dir, 'val.bin'), val_ids.tofile)
    write_atomic(os.path.join(out_dir, 'train.bin'), train_ids.tofile)
    print(f"wrote meta.json, val.bin, train.bin to {out_dir}")

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
    prepare(**vars(parser.parse_args()))
