# The cell both ladders share (n_embd 128, batch 12, 2,000 iterations: 1.54M tokens, ~1.9 per parameter) is
# config/studies/compare_all_small.py's: this file reads its runs of the ladders' methods (results/compare_all_small/
# runs, three seeds; nothing reruns) and times them with config/studies/scale/timing_width128.py, measured on the
# machine that ran the other cells, so that every cell's seconds and ms come from one machine (compare_all_small's own
# come from results/timing_all_small, another machine). Its tuning differs from the other cells' in one way: the
# grid ran 500 iterations (tune_iters), the best points 2,000.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/width128.py
exec(open('config/studies/compare_all_small.py').read())  # its arguments, grid, seeds, ladder (run from the root)
runs = [f'config/{name}_small.py' for name in ('adamw', 'kfac', 'fixed_fisher', 'ekfac', 'muon', 'soap', 'psgd')]
compare_to = ['kfac_small']
runs_from = ['results/compare_all_small']
timing = 'results/scale/timing_width128/results.json'
out_dir = 'out-scale-width128'
