from akerbp.mlops.cli import main

main()
