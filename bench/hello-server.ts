// Baseline for the exchange benchmark: the smallest express app that parses a
// JSON body and answers JSON, measured on the same machine in the same run.
import express from 'express';

const app = express();
app.use(express.json());
app.post('/v1/exchange', (req, res) => {
  res.json({ hello: 'world', policy: (req.body as { policy?: string }).policy ?? null });
});
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address && typeof address === 'object') process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `http://127.0.0.1:${address.port}` })}\n`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
