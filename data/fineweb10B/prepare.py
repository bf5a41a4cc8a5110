"""
Prepare FineWeb's 10B-token sample (HuggingFaceFW/fineweb, configuration sample-10BT), the data of the GPT-2
(124M) speedrun benchmark that config/speedrun_*.py run, with GPT-2's BPE tokenizer. The pipeline is
data/openwebtext/prepare.py's, run on this dataset: each document encoded with tiktoken's encode_ordinary and
ended with the eot token (50256), a val split held out (test_size=0.0015 of the ~15M documents, ~15M tokens: more
than the 10,485,760 tokens the speedrun evaluates on), train.bin and val.bin (np.uint16 ids) written to out_dir.
The download is tens of GB into the HF cache; train.bin is ~20 GB (~10B tokens).

$ python data/fineweb10B/prepare.py --num_proc=16

Offline, or for a test: --data_files=a.txt,b.txt (one document per line; --sample_by=document for one per file).
Set NANOFISHER_DATA_MIRROR to read GPT-2's BPE files from a local mirror instead of downloading them.
"""
import os
import runpy
import argparse

here = os.path.dirname(os.path.abspath(__file__))
# the tokenise-and-write code, shared rather than copied
openwebtext_prepare = runpy.run_path(os.path.join(here, '..', 'openwebtext', 'prepare.py'))['prepare']

def prepare(out_dir=here,
            dataset='HuggingFaceFW/fineweb', # HF hub dataset, used when data_files is None
            name='sample-10BT',    # its 10B-token sample (of 15T)
            data_files=None,       # list of local text files (or one comma-separated str) instead of the hub
            sample_by='line',      # local files: 'line', 'paragraph' or 'document' (one document per file)
            num_proc=8,            # worker processes for loading and tokenizing; about half the cpu cores
            cache_dir=None,        # HF datasets cache (None: its default, ~/.cache/huggingface/datasets)
            test_size=0.0015):     # fraction of the documents held out as val
    openwebtext_prepare(out_dir=out_dir, dataset=dataset, name=name, data_files=data_files, sample_by=sample_by,
                        num_proc=num_proc, cache_dir=cache_dir, test_size=test_size)

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=here)
    parser.add_argument('--dataset', default='HuggingFaceFW/fineweb', help="HF hub dataset, used without --data_files")
    parser.add_argument('--name', default='sample-10BT', help="the hub dataset's configuration")
    parser.add_argument('--data_files', default=None, help="comma-separated local text files instead of the hub")
    parser.add_argument('--sample_by', default='line', choices=['line', 'paragraph', 'document'])
    parser.add_argument('--num_proc', type=int, default=8)
    parser.add_argument('--cache_dir', default=None, help="HF datasets cache folder")
    parser.add_argument('--test_size', type=float, default=0.0015, help="fraction of the documents held out as val")
    prepare(**vars(parser.parse_args()))
