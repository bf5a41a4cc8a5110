# kfac_small's model, data and schedule, with kfac as Martens & Grosse (2015) ran KFAC: the step size alpha and the
# momentum mu from the quadratic model on each step's batch (section 7, step_rule='quadratic'), lambda adapted by
# the Levenberg-Marquardt rule (section 6.5), no grafting, no KL clip, no gradient clipping (the model needs the
# step's true gradient). The scheduled learning_rate only caps alpha; the AdamW part keeps the small config's lr.
# Measured against the grafted config in config/studies/ablations/martens_grosse.py: it stalls near the unigram loss
# (README, Ablations). config/fixed_fisher_mg_small.py is the same recipe with Fixed Fisher.
exec(open('config/kfac_small.py').read())

out_dir = 'out-kfac-mg-small'
step_rule = 'quadratic'
step_rule_freq = 1
damping_schedule = 'lm'
damping_update_freq = 5
grafting = 'none'
kl_clip = None
grad_clip = None
adamw_lr_scale = learning_rate  # the AdamW part at the small config's lr (learning_rate below times this)
learning_rate = 1.0  # caps alpha (warmup and cosine decay shape the cap)
