"""
Prepare OpenWebText (as in nanoGPT) with GPT-2's BPE tokenizer: each document is encoded with
tiktoken's encode_ordinary and ended with the eot token (50256); a small val split is held out
(test_size=0.0005, seed=2357); train.bin and val.bin (np.uint16 ids) are written to out_dir.
The full dataset is ~54GB in the HF cache; train.bin is ~17GB (~9B tokens), val.bin ~8.5MB (~4M tokens).

Instead of the hub dataset, local text files can be given (--data_files=a.txt,b.txt; by default one document
per line, --sample_by=document for one per file), which also lets the pipeline be tested offline.
Set NANOFISHER_DATA_MIRROR to read GPT-2's BPE files from a local mirror instead of downloading them.
"""
import os
import sys
import argparse
import numpy as np
from tqdm import tqdm
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # data/, for common.py
from common import gpt2_encoding, write_atomic

def prepare(out_dir=os.path.dirname(os.path.abspath(__file__)),
            dataset='openwebtext', # HF hub dataset, used when data_files is None
            name=None,             # the hub dataset's configuration, e.g. 'sample-10BT' for HuggingFaceFW/fineweb
            data_files=None,       # list of local text files (or one comma-separated str) instead of the hub
            sample_by='line',      # local files: 'line', 'paragraph' or 'document' (one document per file)
            num_proc=8,            # worker processes for loading and tokenizing; about half the cpu cores
            cache_dir=None,        # HF datasets cache (None: its default, ~/.cache/huggingface/datasets)
            test_size=0.0005):     # fraction of the documents held out as val (rounded up to whole documents)
    from datasets import load_dataset # slow import, only when we prepare
    if data_files is None:
        # note: datasets>=4 refuses hub datasets that still ship a loading script; if "openwebtext" does,
        # use datasets<4 or a parquet copy of it via dataset=...
        ds = load_dataset(dataset, name, num_proc=num_proc, cache_dir=cache_dir)
    else:
        if isinstance(data_files, str):
            data_files = data_files.split(',')
        ds = load_dataset('text', data_files=data_files, sample_by=sample_by, num_proc=num_proc, cache_dir=cache_dir)

    # owt by default only contains the 'train' split, so create a test split
    split_dataset = ds['train'].train_test_split(test_size=test_size, seed=2357, shuffle=True)
    split_dataset['val'] = split_dataset.pop('test') # rename the test split to val

    # tokenize: encode_ordinary ignores any special tokens in the text, then the eot token ends each document
    enc = gpt2_encoding()
    def process(example):
        ids = enc.encode_ordinary(example['text'])
        ids.append(enc.eot_token) # e.g. 50256 for gpt2 bpe
        return {'ids': ids, 'len': len(ids)}
    columns = split_dataset['train'].column_names # 'text', and e.g. FineWeb's 'id', 'url', ...: only ids stay
    tokenized = split_dataset.map(process, remove_columns=columns, desc="tokenizing the splits", num_proc=num_proc)

    # concatenate all the ids in each dataset into one large file we can use for training
    for split in ['val', 'train']: # train.bin last: if it exists, the dataset is complete
        dset = tokenized[split]
        arr_len = int(np.sum(dset.with_format('numpy')['len'], dtype=np.uint64))
        filename = os.path.join(out_dir, f'{split}.bin')
        total_batches = min(1024, len(dset)) # a shard per batch, none empty
        def write(tmp):
            arr = np.memmap(tmp, dtype=np.uint16, mode='w+', shape=(arr_len,)) # enc.max_token_value == 50256 < 2**16
            idx = 0
            for batch_idx in tqdm(range(total_batches), desc=f'writing {filename}'):
                # batch together samples for faster write
                batch = dset.shard(num_shards=total_batches, index=batch_idx, contiguous=True).with_format('numpy')
                arr_batch = np.concatenate(batch['ids'])
                arr[idx : idx + len(arr_batch)] = arr_batch
                idx += len(arr_batch)
            assert idx == arr_len
            arr.flush()
            del arr
        write_atomic(filename, write)
        print(f"{split} has {arr_len:,} tokens in {len(dset):,} documents")
    print(f"wrote val.bin, train.bin to {out_dir}")

# to read the bin files later, e.g. with numpy:
# m = np.memmap('train.bin', dtype=np.uint16, mode='r')

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument('--dataset', default='openwebtext', help="HF hub dataset, used without --data_files")
    parser.add_argument('--name', default=None, help="the hub dataset's configuration")
    parser.add_argument('--data_files', default=None, help="comma-separated local text files instead of the hub")
    parser.add_argument('--sample_by', default='line', choices=['line', 'paragraph', 'document'])
    parser.add_argument('--num_proc', type=int, default=8)
    parser.add_argument('--cache_dir', default=None, help="HF datasets cache folder")
    parser.add_argument('--test_size', type=float, default=0.0005, help="fraction of the documents held out as val")
    prepare(**vars(parser.parse_args()))
