# config/kfac_mg_small.py (Martens & Grosse's recipe: alpha and mu from the quadratic model, Levenberg-Marquardt
# lambda, no grafting, no KL clip, no gradient clipping) with Fixed Fisher's exact damped inverse in place of KFAC's:
# fixed_fisher_small and kfac_small differ only in the optimizer, so this is the same recipe on the other solve.
exec(open('config/kfac_mg_small.py').read())

out_dir = 'out-fixed-fisher-mg-small'
optimizer = 'fixed_fisher'
eigen_refresh = 'none'
