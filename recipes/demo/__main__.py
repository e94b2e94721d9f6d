"""`python -m recipes.demo [retrain | retrain-ar] ...`: see recipes/demo/run.py."""

from recipes.demo.run import main

main()
