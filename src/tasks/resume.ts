/**
 * @module
 * After a restart: webhooks of finished tasks that were neither delivered
 * nor given up on are handed to the sender again, carrying their attempt count.
 */

import type { ConfigSnapshot } from "../plans/snapshot.ts";
import { type Task, taskView } from "./task.ts";
import type { WebhookDelivery } from "./webhook_sender.ts";

/** Re-enqueues the pending webhooks among `tasks`; returns how many. */
export function resumeWebhooks(
  tasks: Iterable<Task>,
  sender: { enqueue(delivery: WebhookDelivery): void },
  config: ConfigSnapshot,
): number {
  let resumed = 0;
  for (const task of tasks) {
    const hook = task.webhook;
    if (task.status !== "COMPLETED" && task.status !== "FAILED") continue;
    if (hook === null || hook.delivered || hook.failed === true) continue;
    sender.enqueue({
      taskId: task.id,
      url: hook.url,
      secret: config.accounts.get(task.accountId)?.webhookSecret,
      body: JSON.stringify(taskView(task)),
      attempts: hook.attempts,
    });
    resumed++;
  }
  return resumed;
}
