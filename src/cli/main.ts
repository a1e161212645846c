// `tsflannel` run by a person (CNI_COMMAND unset): the node tool. Each
// command lives in its own module that registers itself on the parser; add
// one by appending it to COMMANDS.
import yargs, { type Argv } from 'yargs';
import { installCommand } from './install.js';
import { statusCommand } from './status.js';
import { doctorCommand } from './doctor.js';
import { VERSION } from '../version.js';

export type CliCommand = (cli: Argv) => Argv;

export const COMMANDS: readonly CliCommand[] = [installCommand, statusCommand, doctorCommand];

class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Exit codes: 0 done, 1 the command failed, 2 bad usage. */
export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  if (argv.length === 1 && argv[0] === '--version') {
    process.stdout.write(`tsflannel ${VERSION}\n`);
    return;
  }
  let cli: Argv = yargs(argv)
    .scriptName('tsflannel')
    .usage(
      '$0 <command> [options]\n\n' +
        'The tsflannel node tool. Container runtimes run this same binary as the CNI plugin, with CNI_COMMAND set.',
    )
    .strict()
    .demandCommand(1, 'name a command')
    .exitProcess(false)
    .showHelpOnFail(false)
    .fail((msg, err) => {
      // Handler failures arrive with `err`; parse failures with only `msg`.
      throw err ?? new UsageError(msg);
    })
    .help()
    .version(false);
  for (const register of COMMANDS) cli = register(cli);
  try {
    await cli.parseAsync();
  } catch (err) {
    const usage = err instanceof UsageError;
    process.stderr.write(`tsflannel: ${(err as Error).message}${usage ? ' (see tsflannel --help)' : ''}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}
