import json

from django.core.management.base import BaseCommand, CommandError

from monitoring.governor.stress import run_stress


class Command(BaseCommand):
    help = (
        "Run a synthetic CPU and memory load under the governor; report peak and p95 over one-second "
        "windows against the ceilings. The CPU ceiling caps the machine: the load may use what its "
        "neighbours leave under it, so its own figure is at most the ceiling."
    )

    def add_arguments(self, parser):
        parser.add_argument("--cpu", action="store_true", help="Load every core the process may use.")
        parser.add_argument("--memory", type=int, default=0, metavar="MB", help="Hold this much memory (as the governor allows).")
        parser.add_argument("--seconds", type=float, default=10.0)
        parser.add_argument("--json", action="store_true", help="Print the report as one JSON object.")

    def handle(self, *args, cpu, memory, seconds, **options):
        if memory < 0 or seconds <= 0:
            raise CommandError("--memory must be 0 or more and --seconds more than 0")
        if not cpu and not memory:
            raise CommandError("give --cpu, --memory MB or both")
        tty = self.stdout.isatty() and not options["json"]

        def progress(elapsed, reading, decision):
            if tty:
                self.stdout.write(
                    f"\r\033[K{elapsed:5.1f}/{seconds:.0f} s  process CPU {reading.process_cpu_percent:5.1f}%  "
                    f"RSS {reading.rss_bytes / 2**20:6.0f} MB  state {decision.state}", ending="",
                )

        report = run_stress(cpu=cpu, memory_mb=memory, seconds=seconds, progress=progress).as_dict()
        if tty:
            self.stdout.write("")
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        for name in ("cpu", "machine_cpu", "memory"):
            figures = report[name]
            verdict = "held" if figures["peak"] <= figures["ceiling"] * 1.05 else "OVER"
            self.stdout.write(f"{name.replace('_', ' '):<11} peak {figures['peak']:5.1f}%  p95 {figures['p95']:5.1f}%  ceiling {figures['ceiling']:.0f}%  {verdict}")
        self.stdout.write(f"RSS peak {report['rss_mb']['peak']:.0f} MB, held {report['memory_held_mb']} MB, {report['work_units']} units in {report['seconds']} s")
        self.stdout.write(f"governor events: {report['governor_events'] or 'none'}")
