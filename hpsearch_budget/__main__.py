from hpsearch_budget.cli import main

main()
