from compresskit.cli import main

main()
