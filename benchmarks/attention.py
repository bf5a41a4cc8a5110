"""
Forward+backward throughput of one attention layer, softmax vs linear vs delta, over sequence lengths.
Softmax attention costs O(T²) per sequence, so its tokens/s falls as T grows; the chunked linear and delta
rules cost O(T·chunk_size), so theirs stays about flat.

$ OMP_NUM_THREADS=4 python -m benchmarks.attention                       # the small model's layer, T = 256..4096
$ python -m benchmarks.attention --seq_lens=64,128,256 --n_embd=64 --n_head=2 --block   # a quick look, whole Blocks
"""

import argparse
import time

import torch

from model import ATTENTIONS, Block, GPTConfig

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--seq_lens', default='256,512,1024,2048,4096', help='comma-separated T')
parser.add_argument('--attentions', default='softmax,linear,delta', help=f'comma-separated, of {sorted(ATTENTIONS)}')
parser.add_argument('--batch_size', type=int, default=1)
parser.add_argument('--n_embd', type=int, default=384)  # the small shakespeare_char model
parser.add_argument('--n_head', type=int, default=6)
parser.add_argument('--chunk_size', type=int, default=64)
parser.add_argument('--repeats', type=int, default=3, help='timed runs per cell; the median is reported')
parser.add_argument('--block', action='store_true', help='time a whole Block (norms, MLP), not just attention')
parser.add_argument('--device', default='cpu')
args = parser.parse_args()


def tokens_per_s(attention, T):
    config = GPTConfig(block_size=T, n_embd=args.n_embd, n_head=args.n_head, attention=attention, bias=False)
    config.chunk_size = args.chunk_size  # read by linear_attention's modules
    torch.manual_seed(0)
    layer = (Block(config) if args.block else ATTENTIONS[attention](config)).to(args.device)
    x = torch.randn(args.batch_size, T, args.n_embd, device=args.device, requires_grad=True)
    times = []
    for i in range(args.repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        layer(x).square().mean().backward()
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = sorted(times[1:])[len(times[1:]) // 2]
    return args.batch_size * T / dt, dt


seq_lens = [int(t) for t in args.seq_lens.split(',')]
attentions = args.attentions.split(',')
print(f"forward+backward of one {'Block' if args.block else 'attention layer'}: batch {args.batch_size}, "
      f"n_embd {args.n_embd}, n_head {args.n_head}, chunk_size {args.chunk_size}, {args.device}, "
      f"{torch.get_num_threads()} threads; tokens/s (ms per step)")
print(f"{'T':>6} " + ' '.join(f'{a:>20}' for a in attentions))
for T in seq_lens:
    cells = []
    for a in attentions:
        tps, dt = tokens_per_s(a, T)
        cells.append(f'{tps:>10.0f} ({1e3 * dt:>6.1f})')
    print(f'{T:>6} ' + ' '.join(f'{c:>20}' for c in cells), flush=True)
