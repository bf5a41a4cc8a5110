import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
# Triton chooses between its interpreter and the GPU when it is first imported: without a GPU, the kernel tests
# run in the interpreter, whichever test module imports triton first
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
