import { useEffect, useState } from 'preact/hooks';
import { verifyChain, type Verification } from '../api.js';

/** The chain's integrity from `GET /v1/audit/verify`: green when intact, red with where it breaks. */
export function ChainBadge({ onError }: { onError: (err: unknown) => void }) {
  const [result, setResult] = useState<Verification | 'failed' | null>(null);

  useEffect(() => {
    verifyChain().then(setResult, (err: unknown) => {
      onError(err);
      setResult('failed');
    });
  }, [onError]);

  if (result === null) return <p class="badge pending" role="status">Checking the chain…</p>;
  if (result === 'failed') return <p class="badge unknown" role="status">Chain not checked (the broker did not answer)</p>;
  if (result.ok) {
    const checkpoint = result.latest_checkpoint;
    return (
      <p class="badge ok" role="status" data-chain="ok">
        Chain intact: {result.events} records
        {checkpoint !== null && `, checkpoint at seq ${checkpoint.seq} (${age(checkpoint.time)} ago)`}
      </p>
    );
  }
  return (
    <p class="badge broken" role="status" data-chain="broken">
      Chain broken at seq {result.broken?.seq ?? '?'}: {result.broken?.problem ?? 'unknown'} ({result.events} records verified before it)
    </p>
  );
}

function age(time: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}
