//! The tool's commands (`gregor topic`, `user`, `acl`, `txn`, `group`, `produce`,
//! `consume`, `cluster`): each parses its arguments into a call of its module and maps the
//! result to an exit code.

use super::*;

pub(crate) fn run_topic(command: TopicCommand) -> ExitCode {
    match command {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let configs = topic::parse_settings(&configs, "--config").map_err(usage)?;
            let r = topic::create(
                c,
                &topic,
                partitions,
                replication_factor,
                &configs,
                if_not_exists,
            )
            .await?;
            show(a.json, &r, |r| {
                if r.created {
                    println!(
                        "created topic {} ({} partitions, replication factor {})",
                        r.topic, r.partitions, r.replication_factor
                    );
                } else {
                    println!(
                        "topic {} exists already ({} partitions)",
                        r.topic, r.partitions
                    );
                }
            })?;
            Ok(0)
        }),
        TopicCommand::List {
            internal,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let r = topic::list(c, internal).await?;
            show(a.json, &r, |r| topic::print_list(r))?;
            Ok(0)
        }),
        TopicCommand::Describe { topic, client: a } => with_cluster(&a.bootstrap, async |c| {
            let r = topic::describe(c, &topic).await?;
            show(a.json, &r, topic::print_describe)?;
            Ok(0)
        }),
        TopicCommand::Delete {
            topics,
            if_exists,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let r = topic::delete(c, &topics, if_exists).await?;
            show(a.json, &r, |r| {
                for d in r {
                    if d.deleted {
                        println!("deleted topic {}", d.topic);
                    } else {
                        println!("topic {} does not exist", d.topic);
                    }
                }
            })?;
            Ok(0)
        }),
        TopicCommand::AlterConfig {
            topic,
            set,
            delete,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let set = topic::parse_settings(&set, "--set").map_err(usage)?;
            if set.is_empty() && delete.is_empty() {
                return Err(usage(
                    "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
                ));
            }
            let r = topic::alter_config(c, &topic, &set, &delete).await?;
            show(a.json, &r, |r| {
                for (k, v) in &r.set {
                    println!("{}: {k} = {v}", r.topic);
                }
                for k in &r.deleted {
                    println!("{}: {k} back to its default", r.topic);
                }
            })?;
            Ok(0)
        }),
        TopicCommand::AddPartitions {
            topic,
            total,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let r = topic::add_partitions(c, &topic, total).await?;
            show(a.json, &r, |r| {
                println!("topic {} now has {} partitions", r.topic, r.partitions)
            })?;
            Ok(0)
        }),
        TopicCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            list,
            wait,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            if list {
                let moves = topic::reassignments(c, &topic).await?;
                show(a.json, &moves, |m| topic::print_reassignments(m))?;
                return Ok(0);
            }
            let partition = partition.ok_or_else(|| "--partition is required".to_string())?;
            let target = (!cancel).then_some(replicas);
            topic::reassign(c, &topic, partition, target.clone()).await?;
            if wait {
                topic::wait_reassigned(c, &topic, partition).await?;
            }
            let done = topic::Reassigned {
                topic: topic.clone(),
                partition,
                replicas: target,
                complete: wait,
            };
            show(a.json, &done, |d| match &d.replicas {
                Some(r) if d.complete => {
                    println!("{}-{} moved to brokers {r:?}", d.topic, d.partition)
                }
                Some(r) => println!(
                    "{}-{} is moving to brokers {r:?}; follow it with --list",
                    d.topic, d.partition
                ),
                None => println!("{}-{}: move cancelled", d.topic, d.partition),
            })?;
            Ok(0)
        }),
    }
}

pub(crate) fn run_user(command: UserCommand) -> ExitCode {
    match command {
        UserCommand::Create {
            user,
            password_file,
            mechanism,
            iterations,
            data_dir,
            client: a,
        } => {
            let password = match security::read_password(&password_file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("gregor: {e}");
                    return ExitCode::from(2);
                }
            };
            let range = gregor_broker::security::scram::ITERATIONS_MIN
                ..=gregor_broker::security::scram::ITERATIONS_MAX;
            if !range.contains(&iterations) {
                eprintln!("gregor: --iterations {iterations}: use 4096 to 16384");
                return ExitCode::from(2);
            }
            if let Some(dir) = data_dir {
                return match security::create_offline(
                    &dir,
                    &user,
                    mechanism.mechanism(),
                    &password,
                    iterations,
                ) {
                    Ok(()) => {
                        println!(
                            "user {user} ({}) will be created when the broker in {} starts",
                            mechanism.mechanism().name(),
                            dir.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("gregor: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            with_cluster(&a.bootstrap, async |c| {
                security::create_online(
                    c.any(),
                    &user,
                    mechanism.mechanism(),
                    &password,
                    iterations,
                )
                .await?;
                println!("user {user} ({}) created", mechanism.mechanism().name());
                Ok(0)
            })
        }
        UserCommand::Delete {
            user,
            mechanism,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let mechanisms: Vec<_> = match mechanism {
                Some(m) => vec![m.mechanism()],
                None => {
                    let users = security::list_users(c.any()).await?;
                    let found = users
                        .iter()
                        .find(|u| u.user == user)
                        .ok_or_else(|| format!("no user {user}"))?;
                    found
                        .credentials
                        .iter()
                        .filter_map(|(m, _)| gregor_broker::security::scram::Mechanism::parse(m))
                        .collect()
                }
            };
            security::delete_user(c.any(), &user, &mechanisms).await?;
            println!("user {user} deleted");
            Ok(0)
        }),
        UserCommand::List(a) => with_cluster(&a.bootstrap, async |c| {
            let users = security::list_users(c.any()).await?;
            show(a.json, &users, |u| security::print_users(u))?;
            Ok(0)
        }),
    }
}

pub(crate) fn run_acl(command: AclCommand) -> ExitCode {
    match command {
        AclCommand::Add { spec, client: a } => with_cluster(&a.bootstrap, async |c| {
            let n = security::add_acls(c.any(), &spec).await?;
            println!("{n} ACL(s) added");
            Ok(0)
        }),
        AclCommand::List { spec, client: a } => with_cluster(&a.bootstrap, async |c| {
            let rows = security::list_acls(c.any(), &spec).await?;
            show(a.json, &rows, |r| security::print_acls(r))?;
            Ok(0)
        }),
        AclCommand::Remove { spec, client: a } => with_cluster(&a.bootstrap, async |c| {
            let n = security::remove_acls(c.any(), &spec).await?;
            println!("{n} ACL(s) removed");
            Ok(0)
        }),
    }
}

pub(crate) fn run_quota(command: QuotaCommand) -> ExitCode {
    match command {
        QuotaCommand::Set {
            entity,
            quotas,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            quota::alter(c.any(), &entity, &quotas, &[]).await?;
            println!("quotas set");
            Ok(0)
        }),
        QuotaCommand::Remove {
            entity,
            keys,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            quota::alter(c.any(), &entity, &[], &keys).await?;
            println!("quotas removed");
            Ok(0)
        }),
        QuotaCommand::List { entity, client: a } => with_cluster(&a.bootstrap, async |c| {
            let rows = quota::list(c.any(), &entity).await?;
            show(a.json, &rows, |r| quota::print(r))?;
            Ok(0)
        }),
    }
}

pub(crate) fn run_txn(command: TxnCommand) -> ExitCode {
    match command {
        TxnCommand::List(a) => with_cluster(&a.bootstrap, async |c| {
            let txns = txn::list(c.any()).await?;
            show(a.json, &txns, |t| txn::print_list(t))?;
            Ok(0)
        }),
        TxnCommand::Describe { id, client: a } => with_cluster(&a.bootstrap, async |c| {
            let d = txn::describe(c.coordinator(&id, 1).await?, &id).await?;
            show(a.json, &d, txn::print_describe)?;
            Ok(0)
        }),
        TxnCommand::Abort { id, client: a } => with_cluster(&a.bootstrap, async |c| {
            let d = txn::abort(c.coordinator(&id, 1).await?, &id).await?;
            show(a.json, &d, txn::print_aborted)?;
            Ok(0)
        }),
    }
}

pub(crate) fn run_group(command: GroupCommand) -> ExitCode {
    match command {
        GroupCommand::List(a) => with_cluster(&a.bootstrap, async |c| {
            let groups = group::list(c).await?;
            show(a.json, &groups, |g| group::print_list(g))?;
            Ok(0)
        }),
        GroupCommand::Describe {
            group: id,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let d = group::describe(c, &id).await?;
            show(a.json, &d, group::print_describe)?;
            Ok(0)
        }),
        GroupCommand::Delete { groups, client: a } => with_cluster(&a.bootstrap, async |c| {
            let d = group::delete(c, &groups).await?;
            show(a.json, &d, |d| {
                for g in d {
                    println!("deleted group {}", g.group);
                }
            })?;
            Ok(0)
        }),
        GroupCommand::ResetOffsets {
            group: id,
            topic,
            partition,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            dry_run,
            client: a,
        } => with_cluster(&a.bootstrap, async |c| {
            let to = if to_earliest {
                group::ResetTo::Earliest
            } else if to_latest {
                group::ResetTo::Latest
            } else if let Some(o) = to_offset {
                group::ResetTo::Offset(o)
            } else if let Some(t) = &to_datetime {
                group::ResetTo::Datetime(group::parse_datetime(t).map_err(usage)?)
            } else if let Some(n) = shift_by {
                group::ResetTo::ShiftBy(n)
            } else {
                return Err(usage(
                    "give one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by"
                        .into(),
                ));
            };
            let plan = group::reset_offsets(c, &id, &topic, &partition, to, dry_run).await?;
            show(a.json, &plan, group::print_reset)?;
            Ok(0)
        }),
    }
}

pub(crate) fn run_produce(cmd: ProduceCmd) -> ExitCode {
    let headers = match topic::parse_settings(&cmd.header, "--header") {
        Ok(h) => h,
        Err(e) => {
            eprintln!("gregor: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = produce::compression(&cmd.compression).and(produce::acks(&cmd.acks)) {
        eprintln!("gregor: {e}");
        return ExitCode::from(2);
    }
    let args = produce::ProduceArgs {
        topic: cmd.topic,
        file: cmd.file,
        key_separator: cmd.key_separator,
        headers,
        partition: cmd.partition,
        compression: cmd.compression,
        acks: cmd.acks,
    };
    let json = cmd.client.json;
    with_cluster(&cmd.client.bootstrap, async |c| {
        let r = produce::run(c, &args).await?;
        show(json, &r, produce::print)?;
        Ok(0)
    })
}

pub(crate) fn run_consume(cmd: ConsumeCmd) -> ExitCode {
    let read_committed = match cmd.isolation.as_str() {
        "read_committed" => true,
        "read_uncommitted" => false,
        other => {
            eprintln!("gregor: --isolation {other}: expected read_committed or read_uncommitted");
            return ExitCode::from(2);
        }
    };
    let args = consume::ConsumeArgs {
        topic: cmd.topic,
        from_beginning: cmd.from_beginning,
        group: cmd.group,
        partitions: cmd.partition,
        offset: cmd.offset,
        count: cmd.count,
        format: cmd.format,
        read_committed,
        exit_at_end: cmd.exit,
        json: cmd.client.json,
        idle_timeout: cmd.idle_timeout_ms.map(std::time::Duration::from_millis),
    };
    with_cluster(&cmd.client.bootstrap, async |c| {
        consume::run(c, &args).await?;
        Ok(0)
    })
}

pub(crate) fn run_cluster(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Status(a) => with_cluster(&a.bootstrap, async |c| {
            let s = cluster::status(c).await?;
            show(a.json, &s, cluster::print)?;
            Ok(if s.healthy() { 0 } else { 4 })
        }),
    }
}
