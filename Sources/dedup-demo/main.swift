import DedupDemo

await DemoCommand.main()
